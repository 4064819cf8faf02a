# The controller image: one statically linked binary on an empty base,
# running as an unprivileged user. The build context holds only that binary;
# `hack/image` builds it and then this image:
#
#   RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
#     --target x86_64-unknown-linux-gnu -p infrahaus-operator
#
# The image needs no files besides the binary: glibc's files and dns
# resolvers are part of it and read the /etc/hosts and /etc/resolv.conf the
# kubelet mounts; the Kubernetes API is verified with the service account's
# CA, and Proxmox endpoints with the node's pin, its CA bundle or the
# WebPKI roots compiled into the binary.
FROM scratch
COPY --chmod=0555 infrahaus-operator /infrahaus-operator
USER 65532:65532
ENTRYPOINT ["/infrahaus-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="infrahaus-operator" \
      org.opencontainers.image.description="Kubernetes operator that creates and configures Proxmox VE LXC containers" \
      org.opencontainers.image.licenses="Apache-2.0"
