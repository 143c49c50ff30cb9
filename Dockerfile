# The classcache image: the runtime kit on a small glibc base. The operator, the node agents and
# the pods' init step run it; build Jobs copy /opt/classcache into the workload's own image.
#   sh scripts/kit.sh kit && docker build -t ghcr.io/classcache/classcache:0.1.0 .
FROM debian:bookworm-slim
COPY kit/ /opt/classcache/
ENV PATH=/opt/classcache/bin:$PATH
USER 65532:65532
ENTRYPOINT ["classcache"]
