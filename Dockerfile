# lipachat-relay container image.
#
# Build stage: compiles the release binary from source. Runtime stage: a distroless-style
# image with glibc and CA certificates only (no shell, no package manager), running as a
# non-root numeric user. Both base images are build arguments; the defaults are the public
# images a user would pull. Where no registry is reachable, scripts/container-test.sh builds
# local stand-ins for both and passes them here.
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# Everything the build needs (the .dockerignore keeps target/ and .git out). A context that
# carries vendor/ and .cargo/config.toml builds offline.
COPY . .
RUN cargo build --release --locked \
 && cp target/release/lipachat-relay /lipachat-relay

FROM ${RUNTIME_IMAGE}
COPY --from=build /lipachat-relay /usr/local/bin/lipachat-relay
# distroless "nonroot"; numeric so that Kubernetes runAsNonRoot can verify it.
USER 65532:65532
ENV RELAY_LISTEN=0.0.0.0:8080 \
    MOCK_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The binary probes its own /healthz (the image has no curl). Works for `mock-gateway` too.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/lipachat-relay", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lipachat-relay"]
CMD ["serve"]
