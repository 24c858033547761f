# Shipbot: `docker build -t shipbot .` then run with the settings from the environment
# (README "Running in production"). Slim base, no compilers left behind, non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY integrations ./integrations
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHIPBOT_CONFIG=/etc/shipbot/shipbot.yml \
    SHIPBOT_STATE_DIR=/var/lib/shipbot
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/shipbot --create-home shipbot
COPY shipbot.yml /etc/shipbot/shipbot.yml
USER 10001
WORKDIR /var/lib/shipbot
EXPOSE 3000
ENTRYPOINT ["shipbot"]
CMD ["serve", "--port", "3000"]
