# Multi-stage build: compile in the Rust image, run as a non-root user in a slim Debian.
#
# Base images are pinned by exact version, so a build today and one next month start from the
# same toolchain and the same Debian point release; bump them on purpose. rust:1.95.0 is the
# toolchain the tests run on. The full rust image, not -slim: tikv-jemalloc-sys runs jemalloc's
# configure and make, and the slim image has no make.
#
# Dependencies compile in a layer of their own, reused while the manifests and the lockfile
# stay the same: a change in src/ recompiles gatehouse only. cargo-chef does it rather than the
# hand-made "copy Cargo.toml, build a dummy main.rs" trick because it stubs every target the
# manifest declares (the library and the binary here, the [[bench]] targets under bench/),
# builds from the lockfile with the same features, and deletes the dummies' build output after
# `cook`, so the real build cannot take a stale dummy for up to date.
FROM rust:1.95.0-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe: the manifests and the lockfile, without any source. Its layer changes only when
# they do, and with it the dependency layer below.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin gatehouse --recipe-path recipe.json
# The context holds only what the release build reads (.dockerignore).
COPY . .
RUN cargo build --release --locked --bin gatehouse

FROM debian:12.15-slim
# Debian's archive keeps only the current version of a package, so pinning ca-certificates
# would break the build at its next update; the base image's tag pins the rest.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home gatehouse \
 && mkdir -p /var/lib/gatehouse && chown 10001 /var/lib/gatehouse
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
USER 10001
# The audit spool lives here: mount a volume so it survives the container.
WORKDIR /var/lib/gatehouse
VOLUME /var/lib/gatehouse
ENV GATEHOUSE_LISTEN=0.0.0.0:8080 \
    GATEHOUSE_LOG_FORMAT=json \
    GATEHOUSE_AUDIT_SPOOL=/var/lib/gatehouse/audit.spool
EXPOSE 8080
# `gatehouse healthcheck` asks GET /readyz on GATEHOUSE_LISTEN and exits 0 on a 200. Ready means
# the store answers and the settings were read from it, so the container shows unhealthy while
# Redis is away (Docker marks it so; no restart policy acts on health).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["gatehouse", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
