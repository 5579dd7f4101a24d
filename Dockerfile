# syntax=docker/dockerfile:1
# One image for the operator, the issuer pods and the kubectl plugin: the `tessera` binary.
#   docker build -t ghcr.io/tessera-dev/tessera:0.1.0 .
# Without Docker, scripts/image writes the same image (an OCI layout and archive);
# tests/image.rs checks that the final stage below and that image agree.

FROM rust:1.95-bookworm AS builder
# aws-lc-rs (TLS and JOSE crypto) builds its C library with cmake and clang.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tessera \
 && install -D -m 0755 target/release/tessera /out/tessera

# distroless/cc: glibc and CA certificates only (the binary links glibc dynamically); no
# shell, no package manager. The :nonroot tag runs as uid/gid 65532, as the chart expects.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Self-hosted, Okta-style custom authorization servers on Kubernetes" \
      org.opencontainers.image.url="https://tessera.dev" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/tessera /usr/local/bin/tessera
# distroless sets both already; said here so that every image of Tessera says the same.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/nonroot
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["operator"]
