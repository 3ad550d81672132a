# The tracker image: one image for the worker and the simulator.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# every package of pyproject.toml's package-dir (tests/dashboards/test_compose.py checks it);
# without the `local` extra: the image talks to a real Kafka and Redis
COPY streams ./streams
COPY config ./config
COPY state ./state
COPY agents ./agents
COPY devstack ./devstack
COPY cli ./cli
COPY bench ./bench
RUN pip install --no-cache-dir .
ENV WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["retention"]
CMD ["worker"]
