# The `kairos` image the Helm chart runs (every role is a subcommand of the one binary):
#   docker build -t kairos:0.1.0 .
# Build stage: the workspace's release build (protoc comes with the protoc-bin-vendored crate).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kairos-cli \
	&& install -m 0755 target/release/kairos /usr/local/bin/kairos

# Runtime stage: the binary, CA certificates and an unprivileged user; nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 10001 --no-create-home kairos
COPY --from=build /usr/local/bin/kairos /usr/local/bin/kairos
USER 10001
ENTRYPOINT ["kairos"]
CMD ["--help"]
