FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailflow ./mailflow
COPY templates ./templates
RUN pip install --no-cache-dir . && useradd --system mailflow
USER mailflow
ENTRYPOINT ["mailflow"]
CMD ["serve"]
