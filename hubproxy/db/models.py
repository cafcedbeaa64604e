"""Every table of hubproxy's database, declared once (the migrations must produce exactly these).

Each group of tables has one owner module, the only code that reads or writes it:

- repos, refs, commits, entries, repo_aliases, answers: ``hubproxy/repos/rows.py`` (read through the
  revision index, ``repos/index.py``);
- blobs, pins, cache_events, blob_mismatches: ``hubproxy/cache/records.py``; fill_leases: ``cache/lease.py``;
- principals, tokens: ``hubproxy/auth/identity.py``; projects, project_members: ``hubproxy/auth/policy.py``;
- audit_downloads: ``hubproxy/audit/downloads.py``; audit_admin: ``hubproxy/audit/admin.py``;
- cluster_secrets: ``hubproxy/hub/relay.py``;
- namespaces, uploads, audit_writes: ``hubproxy/hosted/rows.py``; webhooks, webhook_deliveries,
  webhook_cursor: ``hubproxy/hosted/webhooks.py``;
- xet_xorbs, xet_xorb_repos, xet_files: ``hubproxy/xet/registry.py``.

``tests/fast/test_schema.py`` checks that upgrading an empty database with the Alembic migrations yields
this schema, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    true,
)

METADATA = MetaData()
#: Auto-increment ids: 64-bit on PostgreSQL, SQLite's rowid integer there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _repo_key() -> list[Column]:
    return [Column("repo_type", String(), primary_key=True), Column("repo_id", String(), primary_key=True)]


# -- the revision index (owner: hubproxy/repos/index.py) -------------------------------------------
repos = Table(
    "repos", METADATA, *_repo_key(),
    Column("source", String(), nullable=False, server_default="upstream"),  # upstream | hosted
    Column("refs_fetched_at", Float(), nullable=False, server_default="0"),  # when the upstream's refs were read
    Column("created_at", Float(), nullable=False),
    # Hosted repos only: who may see it (private | internal | public), the gated setting, the last change.
    Column("visibility", String(), nullable=True),
    Column("gated", String(), nullable=True),
    Column("updated_at", Float(), nullable=True),
)
refs = Table(
    "refs", METADATA, *_repo_key(),
    Column("name", String(), primary_key=True),  # "" is the default revision (the upstream's plain repo info)
    Column("commit", String(), nullable=False),
    Column("fetched_at", Float(), nullable=False),
    Column("kind", String(), nullable=False, server_default="branch"),  # branch | tag | convert | pr | default
    Column("message", Text(), nullable=True),  # a tag's message
)
commits = Table(
    "commits", METADATA, *_repo_key(),
    Column("commit", String(), primary_key=True),
    Column("info", Text(), nullable=True),  # JSON: the repo info at this commit, as the upstream gave it
    Column("listed", Boolean(), nullable=False, server_default=false()),  # entries hold its complete listing
    Column("fetched_at", Float(), nullable=False),
    # Hosted commits only: the git commit's parts (its id is the git hash of these).
    Column("parent", String(), nullable=True),
    Column("tree", String(), nullable=True),
    Column("title", Text(), nullable=True),
    Column("message", Text(), nullable=True),
    Column("author", String(), nullable=True),
    Column("created_at", Float(), nullable=True),
)
entries = Table(
    "entries", METADATA, *_repo_key(),
    Column("commit", String(), primary_key=True),
    Column("path", String(), primary_key=True),
    Column("kind", String(), nullable=False),  # file | directory | missing | left_out
    Column("ordinal", Integer(), nullable=False, server_default="-1"),  # place in the upstream's listing
    Column("size", BigInteger(), nullable=False),
    Column("oid", String(), nullable=True),  # git object id (of the pointer file, for LFS)
    Column("blob", String(), nullable=True),  # content key: sha256 (LFS) or git blob sha1, or an upstream ETag
    Column("lfs", Boolean(), nullable=False),
    Column("pointer_size", Integer(), nullable=True),
    Column("extra", Text(), nullable=True),  # JSON: listing fields hubproxy does not model (lastCommit, ...)
    Column("fetched_at", Float(), nullable=False),
    Index("ix_entries_blob", "blob"),
)
repo_aliases = Table(
    "repo_aliases", METADATA,
    Column("repo_type", String(), primary_key=True),
    Column("alias", String(), primary_key=True),  # an id as clients typed it, lower-cased
    Column("canonical", String(), nullable=False),
    Column("fetched_at", Float(), nullable=False),
)
answers = Table(
    "answers", METADATA,
    Column("key", String(), primary_key=True),  # upstream answers hubproxy replays but does not model
    Column("status", Integer(), nullable=False),
    Column("headers", Text(), nullable=False),
    Column("body", LargeBinary(), nullable=False),
    Column("fetched_at", Float(), nullable=False),
)

# -- hosted repos (owner: hubproxy/hosted/rows.py) -------------------------------------------------
namespaces = Table(
    "namespaces", METADATA,
    Column("name", String(), primary_key=True),  # lower-cased: ids are case-insensitive
    Column("project_id", Integer(), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float(), nullable=False),
)
uploads = Table(
    "uploads", METADATA, *_repo_key(),
    Column("oid", String(), primary_key=True),  # sha256 of an LFS object uploaded (and verified) for this repo
    Column("size", BigInteger(), nullable=False),
    Column("principal", String(), nullable=True),
    Column("created_at", Float(), nullable=False),
)
audit_writes = Table(
    "audit_writes", METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Float(), nullable=False),
    Column("actor", String(), nullable=False),
    Column("token_id", Integer(), nullable=True),
    Column("client_ip", String(), nullable=True),
    Column("repo_type", String(), nullable=False),
    Column("repo_id", String(), nullable=False),
    Column("action", String(), nullable=False),  # repo.create | repo.delete | repo.move | repo.settings | commit | ...
    Column("ref", String(), nullable=True),
    Column("old_commit", String(), nullable=True),
    Column("new_commit", String(), nullable=True),
    Column("files", Integer(), nullable=False, server_default="0"),
    Column("bytes", BigInteger(), nullable=False, server_default="0"),
    Column("detail", Text(), nullable=True),  # JSON: paths changed, settings before/after, ...
    Index("ix_audit_writes_ts", "ts"),
    Index("ix_audit_writes_repo", "repo_type", "repo_id"),
)

webhooks = Table(
    "webhooks", METADATA,
    Column("id", String(), primary_key=True),
    Column("owner", String(), nullable=False),  # the principal who made it; deliveries only show what it may read
    Column("url", String(), nullable=False),
    Column("secret", String(), nullable=True),
    Column("watched", Text(), nullable=False),  # JSON: [{"type": "model|dataset|space|user|org", "name"}]
    Column("domains", Text(), nullable=False),  # JSON: ["repo", "discussion"]
    Column("disabled", Boolean(), nullable=False, server_default=false()),
    Column("created_at", Float(), nullable=False),
)
webhook_deliveries = Table(
    "webhook_deliveries", METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("webhook_id", String(), nullable=False),
    Column("event_id", BigInteger(), nullable=False),  # the audit_writes row it tells about
    Column("payload", Text(), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("next_at", Float(), nullable=False),
    Column("claimed_by", String(), nullable=True),
    Column("claimed_until", Float(), nullable=False, server_default="0"),
    Column("delivered_at", Float(), nullable=True),
    Column("status", Integer(), nullable=True),
    Column("error", Text(), nullable=True),
    Index("ux_webhook_deliveries_event", "webhook_id", "event_id", unique=True),
    Index("ix_webhook_deliveries_next", "next_at"),
)
webhook_cursor = Table(
    "webhook_cursor", METADATA,
    Column("name", String(), primary_key=True),
    Column("last_event", BigInteger(), nullable=False),
)

# -- Xet (owner: hubproxy/xet/registry.py) ----------------------------------------------------------
xet_xorbs = Table(
    "xet_xorbs", METADATA,
    Column("hash", String(), primary_key=True),  # text form of the xorb's merkle hash
    Column("length", BigInteger(), nullable=False),  # serialized bytes, without the footer hubproxy appends
    Column("chunks", LargeBinary(), nullable=False),  # per chunk: byte start, byte end, unpacked size, hash
    Column("created_at", Float(), nullable=False),
)
xet_xorb_repos = Table(
    "xet_xorb_repos", METADATA,
    Column("xorb", String(), primary_key=True),  # a xorb uploaded for, or used by a file of, this repo
    Column("repo_type", String(), primary_key=True),
    Column("repo_id", String(), primary_key=True),
)
xet_files = Table(
    "xet_files", METADATA,
    Column("hash", String(), primary_key=True),  # text form of the file hash
    Column("sha256", String(), nullable=False),  # verified by rebuilding the file when its shard arrived
    Column("size", BigInteger(), nullable=False),
    Column("segments", LargeBinary(), nullable=False),  # per segment: xorb hash, first chunk, end chunk, bytes
    Column("created_at", Float(), nullable=False),
    Index("ix_xet_files_sha256", "sha256"),
)

# -- blobs and the cache (owners: hubproxy/cache/records.py, hubproxy/cache/lease.py) ---------------
blobs = Table(
    "blobs", METADATA,
    Column("key", String(), primary_key=True),
    Column("size", BigInteger(), nullable=False),
    Column("created_at", Float(), nullable=False),
    Column("last_access", Float(), nullable=False, server_default="0"),
    Column("hits", BigInteger(), nullable=False, server_default="0"),
    Index("ix_blobs_last_access", "last_access"),
)
pins = Table(
    "pins", METADATA, *_repo_key(),
    Column("commit", String(), primary_key=True),
    Column("revision", String(), nullable=False),
    Column("created_at", Float(), nullable=False),
)
fill_leases = Table(
    "fill_leases", METADATA,
    Column("key", String(), primary_key=True),
    Column("owner", String(), nullable=False),
    Column("url", String(), nullable=False),
    Column("expires_at", Float(), nullable=False),
)
cache_events = Table(
    "cache_events", METADATA,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(), nullable=False),  # blob | repo
    Column("repo_type", String(), nullable=True),
    Column("repo_id", String(), nullable=True),
    Column("blob", String(), nullable=True),
    Column("ts", Float(), nullable=False),
    Index("ix_cache_events_ts", "ts"),
)
blob_mismatches = Table(
    "blob_mismatches", METADATA,
    Column("key", String(), primary_key=True),
    Column("at", Float(), nullable=False),
    Column("count", Integer(), nullable=False),
)

# -- identity and policy (owners: hubproxy/auth/identity.py, hubproxy/auth/policy.py) ---------------
principals = Table(
    "principals", METADATA,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("name", String(), nullable=False, unique=True),
    Column("kind", String(), nullable=False),  # user | service
    Column("fullname", String(), nullable=False, server_default=""),
    Column("is_admin", Boolean(), nullable=False, server_default=false()),
    Column("disabled", Boolean(), nullable=False, server_default=false()),
    Column("created_at", Float(), nullable=False),
)
tokens = Table(
    "tokens", METADATA,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("principal_id", Integer(), ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(), nullable=False),
    Column("hash", String(), nullable=False, unique=True),
    Column("prefix", String(), nullable=False),
    Column("role", String(), nullable=False),  # read | write
    Column("created_at", Float(), nullable=False),
    Column("expires_at", Float(), nullable=True),
    Column("revoked_at", Float(), nullable=True),
    Column("last_used_at", Float(), nullable=True),
    Index("ix_tokens_principal", "principal_id"),
)
projects = Table(
    "projects", METADATA,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column("name", String(), nullable=False, unique=True),
    Column("rules", Text(), nullable=False, server_default="[]"),  # JSON: [{"effect", "pattern"}]
    Column("pull_new", Boolean(), nullable=False, server_default=true()),
    Column("created_at", Float(), nullable=False),
)
project_members = Table(
    "project_members", METADATA,
    Column("project_id", Integer(), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("principal_id", Integer(), ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(), nullable=False),  # viewer | developer | maintainer
)

# -- audit (owners: hubproxy/audit/downloads.py, hubproxy/audit/admin.py) ---------------------------
audit_downloads = Table(
    "audit_downloads", METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Float(), nullable=False),
    Column("principal", String(), nullable=True),
    Column("token_id", Integer(), nullable=True),
    Column("project", String(), nullable=True),
    Column("client_ip", String(), nullable=True),
    Column("user_agent", String(), nullable=True),
    Column("repo_type", String(), nullable=False),
    Column("repo_id", String(), nullable=False),
    Column("revision", String(), nullable=True),
    Column("commit", String(), nullable=True),
    Column("path", String(), nullable=False),
    Column("range", String(), nullable=True),
    Column("bytes_sent", BigInteger(), nullable=False),
    Column("status", Integer(), nullable=False),
    Column("cache", String(), nullable=True),
    Column("duration", Float(), nullable=False),
    Column("complete", Boolean(), nullable=False),
    Column("outcome", String(), nullable=True),
    Column("error", String(), nullable=True),
    Column("event_id", String(), nullable=True),
    Index("ix_audit_downloads_ts", "ts"),
    Index("ix_audit_downloads_repo", "repo_type", "repo_id"),
    Index("ux_audit_downloads_event", "event_id", unique=True),
)
audit_admin = Table(
    "audit_admin", METADATA,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Float(), nullable=False),
    Column("actor", String(), nullable=False),
    Column("action", String(), nullable=False),
    Column("target", String(), nullable=False),
    Column("before", Text(), nullable=True),
    Column("after", Text(), nullable=True),
    Index("ix_audit_admin_ts", "ts"),
)

# -- replicas (owner: hubproxy/hub/relay.py) ---------------------------------------------------------
cluster_secrets = Table(
    "cluster_secrets", METADATA,
    Column("name", String(), primary_key=True),
    Column("value", String(), nullable=False),
)
