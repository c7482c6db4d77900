# event-router: one process consuming Kafka and delivering to every destination.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY router ./router
COPY destinations ./destinations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app router && mkdir -p /app/data \
    && chown -R router /app
WORKDIR /app
COPY --chown=router config ./config
USER router
EXPOSE 8080
# The server must listen beyond loopback in a container: set ROUTER_LISTEN=0.0.0.0:8080.
ENV ROUTER_LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["event-router"]
CMD ["run", "-c", "/app/config/router.yaml"]
