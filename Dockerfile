# colpg's command line against a PostgreSQL with pgvector (see docker-compose.yml).
FROM python:3.11-slim

# CPU build of torch; pass --build-arg TORCH_INDEX=<a CUDA wheel index> for GPU images.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY colpg ./colpg
COPY sql ./sql
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[cpu]"

# Runs as a normal user; the database is the compose service, never the embedded server.
RUN useradd --create-home colpg
USER colpg
ENTRYPOINT ["colpg"]
CMD ["db", "status"]
