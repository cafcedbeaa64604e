# hubproxy container image: build wheels in one stage, install them into a slim runtime in the next.
# Configure it with HUBPROXY_* environment variables (see config/hubproxy.example.yaml).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hubproxy ./hubproxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG UID=10001
RUN groupadd --system --gid "${UID}" hubproxy \
    && useradd --system --uid "${UID}" --gid hubproxy --home-dir /data --no-create-home --shell /usr/sbin/nologin hubproxy \
    && mkdir -p /data \
    && chown hubproxy:hubproxy /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && rm -rf /wheels
ENV HUBPROXY_HOST=0.0.0.0 \
    HUBPROXY_PORT=8000 \
    HUBPROXY_DATA_DIR=/data \
    HUBPROXY_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
USER ${UID}:${UID}
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HUBPROXY_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hubproxy"]
CMD ["serve"]
