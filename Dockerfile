# ocppgw gateway image. Build: docker build -t ocppgw .   Run: see docker-compose.yml.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs importable settings, not real secrets: a throwaway key for this step only;
# compileschemas fills the schema cache (OCPPGW_SCHEMA_CACHE), so containers start warm
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0 \
    && DJANGO_SECRET_KEY=build-only python manage.py compileschemas \
    && groupadd --system ocppgw && useradd --system --gid ocppgw --home-dir /app ocppgw \
    && chown -R ocppgw:ocppgw /app/staticfiles /app/.cache

USER ocppgw
# 33033 stations (OCPPGW_PORT), 8000 portal/admin/API/metrics (OCPPGW_ADMIN_PORT in compose)
EXPOSE 33033 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
# SIGTERM is handled by rungateway: presence "disconnected", log flushed, clean MQTT goodbye
STOPSIGNAL SIGTERM
CMD ["python", "manage.py", "rungateway", "--processes", "2"]
