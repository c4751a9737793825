# syntax=docker/dockerfile:1
# One image, several entrypoints: the operator (default) and the capsule sidecar.
#
#   docker build -t registry.example.com/astrid/astrid:0.1.0 .
#   docker run --rm registry.example.com/astrid/astrid:0.1.0                           # operator
#   docker run --rm registry.example.com/astrid/astrid:0.1.0 dist/astrid-sidecar.js --help  # sidecar
#
# The base is pinned to a Node line and Debian release, never `latest`, so a rebuild
# cannot silently move to another major version of the runtime.
ARG NODE_IMAGE=node:20.19-bookworm-slim

# ---- build: dev dependencies, TypeScript sources, esbuild bundle -------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
# Lockfile first: the dependency layer is reused until package-lock.json changes.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN node scripts/build.mjs

# ---- runtime: production dependencies, the bundle, the capsule packages ------------
FROM ${NODE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="astrid" \
      org.opencontainers.image.description="Astrid operator and capsule sidecar: an operating system for AI agents" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/astrid-dev/astrid" \
      org.opencontainers.image.vendor="Astrid"
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# No dev tools (tsc, vitest, biome) in the image: less to patch, less for an intruder.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY --from=build /src/capsules ./capsules
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 astrid \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin astrid
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["node"]
# Alternative: CMD ["dist/astrid-sidecar.js"] (the sidecar the operator injects).
CMD ["dist/astrid-operator.js"]
