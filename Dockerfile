# The venna binary (every role and admin command) on a distroless, non-root base.
#   docker build -t venna .
#   docker run --rm venna --help
# docker-compose.yml builds this image for each of its venna services.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binary: the final image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/venna ./cmd/venna
# The gateway's usage spool lives here; a volume mounted on it inherits this owner.
RUN mkdir -p /out/var/lib/venna/spool

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/venna /usr/local/bin/venna
COPY deploy/routes.yaml deploy/prices.yaml /etc/venna/
COPY --from=build --chown=65532:65532 /out/var/lib/venna /var/lib/venna
# The binary's defaults are relative to the repo root (deploy/*.yaml); point them at the
# copies above. Mount another routes file over /etc/venna/routes.yaml to change upstreams.
ENV VENNA_ROUTES_FILE=/etc/venna/routes.yaml \
    VENNA_PRICES_FILE=/etc/venna/prices.yaml \
    VENNA_SPOOL_DIR=/var/lib/venna/spool
# The :nonroot base already runs as 65532 (distroless "nonroot"); saying it numerically keeps
# it true if the base changes and lets Kubernetes' runAsNonRoot verify it.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/venna"]
