# One image holding every edgestack binary. The binaries are cross-compiled
# on the host (make images) and copied in: the final stage is FROM scratch,
# so building needs no registry and no pull.
FROM scratch
COPY deploy/rootfs/ /
COPY build/image/bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /var/lib/edgestack
