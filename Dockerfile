# jt1078-gateway: multi-stage build. The build stage compiles the release binary; the
# runtime stage is Debian slim with only that binary, run as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# the allocator's build settings, and the patched crates `[patch.crates-io]` names
COPY .cargo .cargo
COPY vendor vendor
COPY crates crates
COPY src src
COPY config config
COPY benches benches
COPY examples examples
RUN cargo build --release --locked --bin jt1078-gateway

FROM debian:bookworm-slim AS runtime
# CA certificates: mqtts:// brokers, TURN and S3 endpoints over TLS verify against them;
# libssl3: WebRTC's DTLS and SRTP (str0m's OpenSSL backend)
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /src/target/release/jt1078-gateway /usr/local/bin/jt1078-gateway
USER gateway
# live ingest, playback ingest, HTTP-FLV + WHEP + API, WebRTC
EXPOSE 9501 9502 9531 8000/udp
ENTRYPOINT ["jt1078-gateway"]
CMD ["serve"]
