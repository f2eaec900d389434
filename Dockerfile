# syntax=docker/dockerfile:1
#
# The Nexus image: `nexus serve` as a non-root user, the embedded store in a volume.
#
#   docker build -t nexus:local .
#   docker run -d --name nexus -p 50051:50051 nexus:local
#
# The web UI (ui/dist) is embedded in the binary at compile time (crates/server/src/ui.rs,
# include_dir!). By default the committed bundle is used: the test command fails when it is not
# what the sources in ui/ build to, so it is the UI of this commit, and the image build needs no
# npm. `--build-arg UI_SOURCE=source` rebuilds it from ui/ in a Node stage instead.
ARG UI_SOURCE=committed
ARG RUST_VERSION=1

# --- the web UI bundle -----------------------------------------------------------------------
FROM scratch AS ui-committed
COPY ui/dist /dist

FROM node:22-bookworm-slim AS ui-source
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
# `npm run build`: buf generates the API types from ../proto (no protoc), tsc, vite → dist/.
COPY proto /src/proto
COPY ui/ ./
RUN npm run build && cp -r dist /dist

# A stage above, chosen by UI_SOURCE (BuildKit builds only the one used).
# hadolint ignore=DL3006
FROM ui-${UI_SOURCE} AS ui

# --- the binary --------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# What the build reads: the workspace and every member (cargo loads all of them, even for -p),
# proto/ (compiled by protox in the build scripts of crates/core, crates/server and demo — no
# protoc), patterns/ (include_str! in crates/cli/src/demo.rs) and ui/dist (include_dir! in
# crates/server/src/ui.rs).
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY demo demo
COPY bench bench
COPY proto proto
COPY patterns patterns
COPY --from=ui /dist ui/dist
# `nexus --version` names the revision: .git is not in the context, so pass it
# (`--build-arg NEXUS_GIT_REV=$(git rev-parse --short=12 HEAD)`, as scripts/docker-smoke.sh does).
ARG NEXUS_GIT_REV="unknown revision"
# target/ is a cache mount, so the binary is copied out in the same step. The dist profile
# (release with whole-program optimisation, Cargo.toml) keeps debug info (debug = 1, for
# profiling): about three quarters of the binary, dropped here; the symbol table stays, so
# backtraces still name the functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --profile dist --locked -p nexus-cli \
    && install -D -m 0755 target/dist/nexus /out/nexus \
    && strip --strip-debug /out/nexus

# --- the runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: the system's roots, trusted for https:// backends and PostgreSQL with
# sslmode=verify-full (rustls-native-certs). No OpenSSL: TLS is rustls everywhere. Not pinned:
# bookworm's security updates of it are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nexus \
    && useradd --system --uid 10001 --gid nexus --home-dir /var/lib/nexus --no-create-home \
        --shell /usr/sbin/nologin nexus \
    && install -d -o nexus -g nexus -m 0750 /var/lib/nexus
COPY --from=build /out/nexus /usr/local/bin/nexus

# Listening beyond loopback needs authentication (or `serve --insecure`), so the image requires
# it: API keys come from `docker exec <container> nexus token create --tenant T --subject S --role R`
# (same data directory, or NEXUS_DATABASE_URL). For an open local try-out:
# `docker run -e NEXUS_REQUIRE_AUTH=false -p 127.0.0.1:50051:50051 nexus:local serve --insecure`.
ENV NEXUS_LISTEN=0.0.0.0:50051 \
    NEXUS_DATA_DIR=/var/lib/nexus \
    NEXUS_REQUIRE_AUTH=true

USER 10001:10001
WORKDIR /var/lib/nexus
# The one port: native gRPC, gRPC-Web, Connect JSON, CloudEvents (POST /events) and the UI (/ui/).
EXPOSE 50051
# The embedded SQLite store (unused with NEXUS_DATABASE_URL).
VOLUME ["/var/lib/nexus"]

# No curl in the image: bash's /dev/tcp sends `GET /ui/` (served without credentials) to the port
# of NEXUS_LISTEN and wants a 200. With NEXUS_TLS_CERT set it only checks that the port accepts
# connections (TLS configured only in a nexus.toml: override this HEALTHCHECK).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "l=${NEXUS_LISTEN:-:50051}; exec 3<>/dev/tcp/127.0.0.1/${l##*:} || exit 1; [ -n \"${NEXUS_TLS_CERT:-}\" ] && exit 0; printf 'GET /ui/ HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3; IFS= read -r -t 4 status <&3; case $status in 'HTTP/1.1 200'*) exit 0 ;; *) exit 1 ;; esac"]

ENTRYPOINT ["nexus"]
CMD ["serve"]
