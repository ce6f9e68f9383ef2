# iarnet node image.
#
#   docker build -t iarnet .
#   docker run -d --name node1 --network mesh \
#       -e IARNET_ADVERTISE_ADDR=node1:50051 -e IARNET_INITIAL_PEERS=node2:50051 \
#       -v iarnet-node1:/var/lib/iarnet/data iarnet
#
# Build arguments (both stages' bases):
#   RUST_IMAGE     toolchain of the build stage       (default rust:1.95-bookworm)
#   RUNTIME_IMAGE  base of the runtime stage          (default debian:bookworm-slim)
#
# Prebuilt binary: when the build context holds prebuilt/iarnet (.dockerignore
# lets it through), the build stage installs that file instead of compiling,
# and RUST_IMAGE only needs a POSIX shell. Remove prebuilt/ from the checkout
# for a normal build. This is how the tests build this same runtime stage with
# no registry: tests/support/build-base-image.sh imports
# iarnet-local/runtime-base:bookworm (Debian's libc6, libgcc-s1 and
# busybox-static) and the image is built with
#   DOCKER_BUILDKIT=0 docker build \
#       --build-arg RUST_IMAGE=iarnet-local/runtime-base:bookworm \
#       --build-arg RUNTIME_IMAGE=iarnet-local/runtime-base:bookworm ...
# The binary links only against glibc and libgcc_s, so it must be built on
# bookworm's glibc (2.36) or older.
#
# Runtime: uid/gid 10001, config /etc/iarnet/config.yaml, data (node id)
# /var/lib/iarnet/data: mount a volume there so a restarted container keeps
# its id. For the internal Docker provider, mount the engine's socket and add
# its group: -v /var/run/docker.sock:/var/run/docker.sock --group-add <gid>.
# A stop drains for up to shutdown_grace (10s); give `docker stop` more
# (--stop-timeout 15 / -t 15) so the node is not killed mid-drain.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Build stage: compiles the binary (protos compile with protox: no protoc
# needed) with debug info stripped, or installs prebuilt/iarnet.
FROM ${RUST_IMAGE} AS build
# The legacy builder leaves this stage behind as an untagged image; the label
# lets `docker image prune --filter label=iarnet.stage=build` find it.
LABEL iarnet.stage=build
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /out; \
    if [ -f prebuilt/iarnet ]; then \
        echo "installing prebuilt/iarnet instead of compiling"; \
        cp prebuilt/iarnet /out/iarnet; \
    else \
        CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
            cargo build --release --locked --bin iarnet; \
        cp target/release/iarnet /out/iarnet; \
    fi; \
    chmod 0755 /out/iarnet

# Runtime stage: the binary, its configuration, a non-root user.
FROM ${RUNTIME_IMAGE} AS runtime
# Plain file edits rather than useradd, so a busybox-based RUNTIME_IMAGE works too.
# git (and ssh for ssh:// remotes) clones applications; a base without apt
# (the tests' busybox base) leaves it out and applications say git is missing.
RUN set -eu; \
    if command -v apt-get >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi; \
    echo 'iarnet:x:10001:10001:iarnet node:/var/lib/iarnet:/usr/sbin/nologin' >>/etc/passwd; \
    echo 'iarnet:x:10001:' >>/etc/group; \
    mkdir -p /etc/iarnet /var/lib/iarnet/data /var/lib/iarnet/workspaces; \
    chown -R 10001:10001 /var/lib/iarnet
COPY --from=build /out/iarnet /usr/local/bin/iarnet
COPY config.yaml /etc/iarnet/config.yaml
USER 10001:10001
WORKDIR /var/lib/iarnet
ENV IARNET_CONFIG=/etc/iarnet/config.yaml \
    IARNET_DATA_DIR=/var/lib/iarnet/data \
    IARNET_WORKSPACE_DIR=/var/lib/iarnet/workspaces
# gRPC: PeerService (gossip between nodes), Admin, ResourceService, health, reflection.
EXPOSE 50051
# HTTP API.
EXPOSE 8083
# `iarnet health` asks the gRPC health service on 127.0.0.1:50051; exit 0 when SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/iarnet", "health"]
ENTRYPOINT ["/usr/local/bin/iarnet"]
