"""The admin REST API (``/admin/api/v1``) with its OpenAPI document and docs page."""
