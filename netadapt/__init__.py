"""NetAdapt as MobileNetV3 used it: proposals, weight surgery, the resumable loop.

Public API:
  units(spec), propose(spec, predict_ms, current_ms, delta_ms), apply(spec, unit, width)
                                                     -- netadapt.proposals
  channel_plan(spec)                                 -- netadapt.channels (coupled channel spaces)
  shrink(model, spec, new_spec), zero_channels(...)  -- netadapt.surgery (L2-norm weight surgery)
  NetAdaptConfig, run_netadapt(...), training_spec   -- netadapt.loop
  TableLatency(table_path)  (predict_ms(spec) -> float, measures missing ops)
                                                     -- netadapt.latency_model
  adapt_state_dict(state, train_spec)                -- netadapt.start (torchvision weights)
"""

from .channels import ChannelPlan, channel_plan
from .latency_model import TableLatency, predict_ms_from_table
from .loop import NetAdaptConfig, NetAdaptResult, run_netadapt, training_spec
from .proposals import Proposal, Unit, apply, candidate_widths, propose, units
from .start import adapt_state_dict, read_state_dict
from .surgery import SurgeryError, shrink, zero_channels

__all__ = ["ChannelPlan", "channel_plan", "TableLatency", "predict_ms_from_table", "NetAdaptConfig",
           "NetAdaptResult", "run_netadapt", "training_spec", "Proposal", "Unit", "apply", "candidate_widths",
           "propose", "units", "adapt_state_dict", "read_state_dict", "SurgeryError", "shrink", "zero_channels"]
