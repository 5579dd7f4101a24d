# syntax=docker/dockerfile:1
# One image for the operator, the issuer pods and the kubectl plugin: the `tessera` binary.
#   docker build -t ghcr.io/tessera-dev/tessera:0.1.0 .

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
COPY --from=builder /out/tessera /usr/local/bin/tessera
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["operator"]
