# Multi-stage build: compile in the Rust image, run as a non-root user in a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
RUN cargo build --release --locked --bin gatehouse

FROM debian:bookworm-slim
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
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
