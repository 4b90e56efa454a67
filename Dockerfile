# The ferry image: built from source with the Rust toolchain, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
# etcd-client's build generates its gRPC code with protoc.
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cp "$(scripts/build-release.sh)" /src/ferry

FROM debian:bookworm-slim
COPY --from=build /src/ferry /usr/local/bin/ferry
# Inside a container the listeners must face the network, not loopback.
ENV FERRY_EUREKA_LISTEN=0.0.0.0:8761 \
    FERRY_CONSUL_LISTEN=0.0.0.0:8500 \
    FERRY_CONFIG_LISTEN=0.0.0.0:8888 \
    FERRY_OUTBOUND_BIND=0.0.0.0 \
    FERRY_ADMIN_LISTEN=0.0.0.0:15000 \
    FERRY_DATA_DIR=/var/lib/ferry
VOLUME /var/lib/ferry
EXPOSE 8761 8500 8888 15000
ENTRYPOINT ["/usr/local/bin/ferry"]
