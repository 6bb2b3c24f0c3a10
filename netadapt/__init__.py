"""NetAdapt as MobileNetV3 used it: proposals, weight surgery, the resumable loop.

Public API:
  units(spec), propose(spec, predict_ms, current_ms, delta_ms)   -- netadapt.proposals
  shrink(model, spec, new_spec), channel_plan(spec)               -- netadapt.surgery / .channels
  NetAdaptConfig, run_netadapt(...)                               -- netadapt.loop
  TableLatency(table_path)  (predict_ms(spec) -> float)          -- netadapt.latency_model
"""

from .channels import ChannelPlan, channel_plan
from .proposals import Proposal, Unit, apply, candidate_widths, propose, units
from .surgery import SurgeryError, shrink, zero_channels

__all__ = ["ChannelPlan", "channel_plan", "Proposal", "Unit", "apply", "candidate_widths", "propose", "units",
           "SurgeryError", "shrink", "zero_channels"]
