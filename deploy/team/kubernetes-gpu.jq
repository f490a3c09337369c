# A Kubernetes work pool whose flow runs each get one GPU and the shared work dir (documented, not run here).
#   prefect work-pool get-default-base-job-template --type kubernetes \
#     | jq -f deploy/team/kubernetes-gpu.jq > gpu-template.json
#   prefect work-pool create gpu-k8s --type kubernetes --base-job-template gpu-template.json
# The container is the one job that runs a flow: one GPU (the scheduler picks which), tolerating GPU-node taints,
# with the PersistentVolumeClaim `asu-work` (ReadWriteMany) mounted at /asu-work (ASU_WORK_DIR: checkpoints, reports,
# the gpu-slot holder file must be shared by every run).
.job_configuration.job_manifest.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] = 1
| .job_configuration.job_manifest.spec.template.spec.tolerations =
    [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
| .job_configuration.job_manifest.spec.template.spec.volumes =
    [{"name": "asu-work", "persistentVolumeClaim": {"claimName": "asu-work"}}]
| .job_configuration.job_manifest.spec.template.spec.containers[0].volumeMounts =
    [{"name": "asu-work", "mountPath": "/asu-work"}]
