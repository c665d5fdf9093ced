# masv-agent in a container, laid out like MASV Agent's image: the configuration in /config
# (agent.toml), the agent's state (database, API token) and transfers in /data.
#   docker build -t masv-agent .
#   docker run -d -p 127.0.0.1:8080:8080 -v "$PWD/config:/config" -v "$PWD/data:/data" masv-agent
# Not built by CI (no Docker engine there); see the README's Install section.

# Build stage: the release binary, from this source tree.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: `masv --version` says "commit unknown" unless the build passes
# one in (SOURCE_DATE_EPOCH fixes the build date for reproducible images).
ARG SOURCE_DATE_EPOCH
RUN cargo build --release --locked && strip target/release/masv

# Run stage: the binary alone, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin masv-agent \
    && install -d -o masv-agent -g masv-agent -m 0700 /data \
    && install -d -o masv-agent -g masv-agent -m 0750 /config
COPY --from=build /src/target/release/masv /usr/bin/masv
COPY packaging/agent.toml /config/agent.toml
USER masv-agent
VOLUME ["/config", "/data"]
# Inside a container the API must listen on all its addresses to be published; off loopback
# the agent serves only with a token: the one it makes in /data/api-token, or api_token in
# /config/agent.toml. `docker exec CONTAINER masv download ls` finds it (MASV_DATA_DIR).
ENV MASV_CONFIG=/config/agent.toml MASV_DATA_DIR=/data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["sh", "-c", "masv download ls >/dev/null"]
ENTRYPOINT ["/usr/bin/masv"]
CMD ["server", "start", "--config", "/config/agent.toml", "--data-dir", "/data", "--listen", "0.0.0.0:8080"]
