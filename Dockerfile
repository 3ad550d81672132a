# The tracker image: one image for the worker and the simulator.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
RUN pip install --no-cache-dir .
ENV WEB_HOST=0.0.0.0
EXPOSE 6066
ENTRYPOINT ["retention"]
CMD ["worker"]
