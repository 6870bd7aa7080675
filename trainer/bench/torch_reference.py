"""PyTorch eager reference for `rir-train bench`.

Builds the same network as rir-train's one-convolution model from the layer
plan that `rir-train bench` passes as JSON (so the two cannot drift apart),
trains it on a fixed random batch, and prints one JSON line with images per
second, peak RSS and the device it ran on. Run by `rir-train bench`.

With "mode": "infer" it measures eager inference instead, the in-process
reference for the server on a GPU (scripts/gpu-check.sh): batch-1 latency
(p50, p99) and throughput at "batch", each call including the host-to-device
copy of the input and the device-to-host copy of the logits:

    python3 torch_reference.py '{"plan": <rir-train plan>, "mode": "infer", "batch": 64, "device": "cuda"}'
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


def pick_device(name):
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch sees no CUDA device")
    return torch.device("cuda")


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def infer(args, net, dev):
    """Eager eval-mode inference with host copies, as a server would run it."""
    c, h, w = args["plan"]["input"]
    net.eval()
    mixed = args.get("mixed", False)
    if mixed:
        net = net.to(memory_format=torch.channels_last)
    batch = args["batch"]

    def run(x):
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
            return net(x.to(dev, non_blocking=False)).float().cpu()

    one = torch.randn(1, c, h, w)
    big = torch.randn(batch, c, h, w)
    for _ in range(50):
        run(one)
    for _ in range(10):
        run(big)
    lat = []
    t_end = time.perf_counter() + args.get("seconds", 3.0)
    while time.perf_counter() < t_end or len(lat) < 100:
        t = time.perf_counter()
        run(one)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.get("seconds", 3.0) or runs < 10:
        run(big)
        runs += 1
    secs = time.perf_counter() - t0
    print(json.dumps({
        "device": dev.type, "batch1_p50_ms": lat[len(lat) // 2],
        "batch1_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "img_per_s": batch * runs / secs, "batch": batch,
    }))


def main():
    args = json.loads(sys.argv[1])
    plan = args["plan"]
    torch.set_num_threads(args.get("threads", torch.get_num_threads()))
    torch.manual_seed(0)
    dev = pick_device(args.get("device", "cpu"))
    net = Net(plan).to(dev)
    if args.get("mode") == "infer":
        return infer(args, net, dev)
    mixed = args.get("mixed", False)
    if mixed:
        net = net.to(memory_format=torch.channels_last)
    decay = [p for p in net.parameters() if p.dim() == 4]
    rest = [p for p in net.parameters() if p.dim() != 4]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 1e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=0.01, momentum=0.9,
    )
    c, h, w = plan["input"]
    x = torch.randn(args["batch"], c, h, w, device=dev)
    if mixed:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, plan["classes"], (args["batch"],), device=dev)
    net.train()

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
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
    print(json.dumps({"img_per_s": args["batch"] * args["steps"] / secs, "peak_rss_mb": rss_mb,
                      "device": dev.type}))


if __name__ == "__main__":
    main()
