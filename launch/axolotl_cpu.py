"""An Axolotl plugin for bf16 training on a CPU (AVX512-BF16 / AMX), added by launch.train.

transformers' TrainingArguments refuses bf16 without a bf16 GPU unless `use_cpu` is set ("Your
setup doesn't support bf16/gpu. You need to assign use_cpu"), and Axolotl 0.19 has no recipe key
for it; a plugin's get_training_args is Axolotl's own way to pass one:

    plugins: [launch.axolotl_cpu.CPUTrainingPlugin]
"""

from __future__ import annotations

from axolotl.integrations.base import BasePlugin


class CPUTrainingPlugin(BasePlugin):
    """Train on the CPU: TrainingArguments(use_cpu=True), so bf16 autocast runs there."""

    def get_training_args(self, cfg):
        return {"use_cpu": True}
