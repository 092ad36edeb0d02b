# lipachat-relay container image.
#
# Build stage: compiles the release binary from source. Runtime stage: a distroless image with
# glibc and CA certificates only (no shell, no package manager), running as a non-root numeric
# user. Both base images are build arguments whose defaults are the public images a user would
# pull. Where no registry is reachable, scripts/container-test.sh builds local stand-ins for
# both and passes them here. Works with the classic builder and with BuildKit.
#
#   docker build -t lipachat-relay .
#   docker run --rm -p 127.0.0.1:8080:8080 --read-only --cap-drop ALL lipachat-relay serve --mock-upstream
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
# Lets scripts/container-test.sh prune the classic builder's leftover build stages (and only
# those) between runs.
LABEL lipachat-relay.stage=build
WORKDIR /src
# Everything the build needs; .dockerignore keeps target/ and .git out. A context that carries
# vendor/ and .cargo/config.toml (as the container test's does) builds with no network.
COPY . .
RUN cargo build --release --locked \
 && cp target/release/lipachat-relay /lipachat-relay

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="lipachat-relay" \
      org.opencontainers.image.description="Sidecar that sends WhatsApp media through the Lipachat gateway" \
      org.opencontainers.image.licenses="MIT"
# A glibc binary (rustls with bundled webpki roots: it reads no CA files); the runtime image
# provides libc, libm, libgcc_s and the loader.
COPY --from=build /lipachat-relay /usr/local/bin/lipachat-relay
# distroless "nonroot", numeric so that Kubernetes runAsNonRoot can verify it.
USER 65532:65532
# Inside a container the relay must listen on all interfaces; `mock-gateway` reads MOCK_LISTEN.
ENV RELAY_LISTEN=0.0.0.0:8080 \
    MOCK_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The binary probes its own /healthz (the image has no curl); the mock gateway serves one too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/lipachat-relay", "healthcheck"]
# SIGTERM starts the drain: /readyz turns 503, sends under way finish within
# RELAY_SHUTDOWN_GRACE_SECS (25 s), exit 0. Give `docker stop` / Kubernetes more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lipachat-relay"]
CMD ["serve"]
