"""PyTorch eager reference for `rir-train bench`.

Builds the same network as rir-train's one-convolution model from the layer
plan that `rir-train bench` passes as JSON (so the two cannot drift apart),
trains it on a fixed random batch, and prints one JSON line with images per
second and peak RSS. Run by `rir-train bench`; not meant to be called alone.
"""

import json
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Shortcut(nn.Module):
    def __init__(self, s, out_ch):
        super().__init__()
        self.kind = s["kind"]
        self.in_res, self.out_res, self.stride = s["in_res"], s["out_res"], s["stride"]
        self.out_ch = out_ch
        if self.kind == "conv":
            self.proj = nn.Conv2d(self.in_res, self.out_res, 1, stride=self.stride, bias=False)
            nn.init.kaiming_normal_(self.proj.weight, nonlinearity="relu")

    def forward(self, x):
        r = x[:, : self.in_res]
        if self.kind == "identity":
            y = r
        elif self.kind == "conv":
            y = self.proj(r)
        else:
            y = r[:, :, :: self.stride, :: self.stride]
            y = F.pad(y, (0, 0, 0, 0, 0, self.out_res - self.in_res))
        return F.pad(y, (0, 0, 0, 0, 0, self.out_ch - y.shape[1])) if y.shape[1] < self.out_ch else y


class Unit(nn.Module):
    """One generalized residual unit: one conv over concat(r, t), shortcut, BN."""

    def __init__(self, u, mask):
        super().__init__()
        self.conv = nn.Conv2d(u["in_ch"], u["out_ch"], 3, stride=u["stride"], padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        self.register_buffer("mask", None if mask is None else torch.tensor(mask).view(u["out_ch"], u["in_ch"], 1, 1))
        self.shortcut = Shortcut(u["shortcut"], u["out_ch"]) if u["shortcut"] else None
        self.bn = nn.BatchNorm2d(u["out_ch"])

    def forward(self, x):
        w = self.conv.weight if self.mask is None else self.conv.weight * self.mask
        y = F.conv2d(x, w, stride=self.conv.stride, padding=1)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.bn(y)


class Block(nn.Module):
    def __init__(self, b):
        super().__init__()
        self.u0 = Unit(b["units"][0], b["masks"][0])
        self.u1 = Unit(b["units"][1], b["masks"][1])
        self.outer = Shortcut(b["outer"], b["units"][1]["out_ch"]) if b["outer"] else None

    def forward(self, x):
        y = self.u1(F.relu(self.u0(x)))
        if self.outer is not None:
            y = y + self.outer(x)
        return F.relu(y)


class Net(nn.Module):
    def __init__(self, plan):
        super().__init__()
        c, _, _ = plan["input"]
        self.stem = nn.Conv2d(c, plan["stem_out"], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(plan["stem_out"])
        self.blocks = nn.Sequential(*[Block(b) for b in plan["blocks"]])
        self.head = nn.Conv2d(plan["head_in"], plan["classes"], 1, bias=False)
        self.head_bn = nn.BatchNorm2d(plan["classes"])

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        return self.head_bn(self.head(x)).mean(dim=(2, 3))


def main():
    args = json.loads(sys.argv[1])
    plan = args["plan"]
    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    net = Net(plan)
    decay = [p for p in net.parameters() if p.dim() == 4]
    rest = [p for p in net.parameters() if p.dim() != 4]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=0.01, momentum=0.9,
    )
    c, h, w = plan["input"]
    x = torch.randn(args["batch"], c, h, w)
    y = torch.randint(0, plan["classes"], (args["batch"],))
    net.train()

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(args["steps"]):
        loss = step()
    loss.item()
    secs = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"img_per_s": args["batch"] * args["steps"] / secs, "peak_rss_mb": rss_mb}))


if __name__ == "__main__":
    main()
