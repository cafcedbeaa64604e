# hubproxy container image: a virtual environment built in one stage and copied whole into the runtime stage (no
# wheel layer left behind), with every extra (S3, PostgreSQL, signing, progress) at the versions of constraints.txt.
# Configure it with HUBPROXY_* environment variables (see config/hubproxy.example.yaml).
# BASE: where the public registry is unreachable, a locally made image with Python 3.10+ (e.g. from debootstrap).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY hubproxy ./hubproxy
RUN python3 -m venv /opt/hubproxy \
    && /opt/hubproxy/bin/pip install --no-cache-dir -c constraints.txt ".[all]"

FROM ${BASE}
ARG UID=10001
# Group 0 owns /data and may write it: the image also runs under an arbitrary UID (OpenShift), whose GID is 0.
RUN groupadd --system --gid "${UID}" hubproxy \
    && useradd --system --uid "${UID}" --gid hubproxy --home-dir /data --no-create-home --shell /usr/sbin/nologin hubproxy \
    && mkdir -p /data \
    && chown "${UID}:0" /data \
    && chmod 0775 /data
COPY --from=build /opt/hubproxy /opt/hubproxy
ENV PATH=/opt/hubproxy/bin:${PATH} \
    HUBPROXY_HOST=0.0.0.0 \
    HUBPROXY_PORT=8000 \
    HUBPROXY_DATA_DIR=/data \
    HUBPROXY_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
USER ${UID}:${UID}
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HUBPROXY_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hubproxy"]
CMD ["serve"]
