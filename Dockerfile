# mailflow's image: one image for every edge (web, smtpd, worker, scheduler,
# imap, db upgrade); docker-compose.yml runs each as its own service.
# Without arguments it runs `mailflow serve` (every edge in one process),
# which needs the secret key: give it, e.g.
#   docker run -e MAILFLOW_SECRET_KEYS="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" \
#     -v mailflow:/var/lib/mailflow -p 8000:8000 mailflow
# or put it in the volume's secret-key file; the image holds none.
FROM python:3.11.11-slim-bookworm

# A fixed numeric user (not root), so volume ownership and Kubernetes'
# runAsNonRoot checks work without looking the name up.
ARG MAILFLOW_UID=10001

# Everything mailflow writes lives in one volume, so the image itself needs
# no writable folder: the maildir (used when no relay is set), the key file
# and the SQLite database of `mailflow serve`'s embedded defaults.  Edges
# listen on every interface of the container; the ports are published (or
# not) by whoever runs it.  DL3064 takes MAILFLOW_SECRET_KEY_FILE for a
# secret: it is the path of the key file, not the key (which comes from the
# environment or that file at run time, never from the image).
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAILFLOW_DATABASE_URL=sqlite:////var/lib/mailflow/mailflow.db \
    MAILFLOW_SECRET_KEY_FILE=/var/lib/mailflow/secret-key \
    MAILFLOW_MAILDIR=/var/lib/mailflow/maildir \
    MAILFLOW_WEB_ADDR=0.0.0.0:8000 \
    MAILFLOW_INBOUND_ADDR=0.0.0.0:8025

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY mailflow ./mailflow
COPY templates ./templates
RUN pip install --no-cache-dir . \
    && useradd --system --uid "${MAILFLOW_UID}" --user-group \
        --home-dir /var/lib/mailflow --no-create-home --shell /usr/sbin/nologin mailflow \
    && install -d -m 0700 -o "${MAILFLOW_UID}" -g "${MAILFLOW_UID}" /var/lib/mailflow

VOLUME ["/var/lib/mailflow"]
WORKDIR /var/lib/mailflow
USER ${MAILFLOW_UID}

# 8000 web pages, 8025 inbound SMTP (8024 as LMTP in docker-compose.yml),
# 9100 the metrics and health endpoints of smtpd and worker.
EXPOSE 8000 8024 8025 9100

# `mailflow serve`'s web pages on :8000.  Every other command inherits it
# and nothing of theirs listens on 8000: docker-compose.yml replaces it for
# each edge (the metrics address's /healthz, or a database connection) and
# disables it for `db upgrade`.  Outside compose (`docker run IMAGE worker`,
# smtpd, scheduler, imap) replace it yourself, e.g. `--health-cmd` on the
# metrics address with MAILFLOW_METRICS_ADDR set, or `--no-healthcheck`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]

ENTRYPOINT ["mailflow"]
CMD ["serve"]
