# syntax=docker/dockerfile:1
# One image for every Zhinian process: the API (default CMD), workers
# (`node dist/cli/worker.mjs`) and one-off migrations (`node dist/cli/migrate.mjs`).
# test/deploy-files.test.ts checks this file against the app (no Docker engine runs in CI).

# --- build: compile native modules, bundle src/cli into dist/, then drop dev packages ---
FROM node:20-bookworm-slim AS build
# better-sqlite3 downloads a prebuilt binary when one matches; these build it when none does.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY scripts ./scripts
COPY src ./src
# The bundle imports only packages listed under "dependencies" (the test checks it), so pruning
# the dev ones leaves everything dist/ needs. The image runs the system ffmpeg (on PATH, so
# @ffmpeg-installer is never loaded): its ~75 MB static binaries go too.
RUN node scripts/build.mjs \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/@ffmpeg-installer/linux-* \
 && npm cache clean --force

# --- runtime: Node, ffmpeg, the bundle and production node_modules; runs as `node` ---
FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Code stays root-owned (the process cannot rewrite it); only the data dir (temp files, the
# SQLite file when DATABASE_URL is unset, local assets when no bucket is set) is writable.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
RUN mkdir -p /app/data && chown node:node /app/data
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    ZHINIAN_DATA_DIR=/app/data
USER node
EXPOSE 3000
# Readiness (database and storage reachable). Slim images have no curl: Node's fetch does it.
# Worker containers serve no HTTP: docker-compose.yml turns this check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) lets the process hand unfinished jobs back before it exits.
CMD ["node", "--enable-source-maps", "dist/cli/server.mjs"]
