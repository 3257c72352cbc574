"""The black-box training runs that tests/test_blackbox_distributed.py makes on 2 ranks and in one process."""
import torch
from torch import nn

from reprogram_ext.blackbox.reprogrammer import BlackBoxReprogrammer
from reprogram_ext.blackbox.zo_estimator import ZOEstimator
from reprogram_ext.nn import LabelMapping, PaddingPrompt

B, STEPS = 4, 3
CASES = {
    "rge_q5": ZOEstimator("rge", q=5, beta=0.05),  # Q = 6: 3 + 3 queries
    "rge_q4": ZOEstimator("rge", q=4, beta=0.05),  # Q = 5: 3 + 2
    "spsa_q3": ZOEstimator("spsa", q=3),  # Q = 6, beta = SPSA-GC's c_k
}


def run_case(name: str) -> dict:
    torch.manual_seed(0)  # the same frozen model and program on every rank
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    prompt = PaddingPrompt(4, 8, channels=3, init="randn")
    rp = BlackBoxReprogrammer(model, prompt, LabelMapping(6, 3, "identity"), CASES[name], inputs_per_call=B, seed=11)
    data = torch.Generator().manual_seed(5)  # the same batches on every rank
    programs = []
    for _ in range(STEPS):
        x, y = torch.rand(B, 3, 4, 4, generator=data), torch.randint(0, 3, (B,), generator=data)
        rp.step(x, y)
        programs.append(prompt.delta.detach().clone())
    return {"programs": programs, "losses": list(rp.history), "queries": rp.queries, "calls": rp.black_box.calls}
