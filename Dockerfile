# One image holding every edgestack binary. The binaries are cross-compiled
# on the host (make images) and copied in: the final stage is FROM scratch,
# so building needs no registry and no pull (and no BuildKit).
FROM scratch
COPY deploy/rootfs/etc/ /etc/
# State folders owned by the non-root user, so named volumes mounted there
# start with the right owner.
COPY --chown=65532:65532 deploy/rootfs/var/ /var/
COPY build/image/bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /var/lib/edgestack
