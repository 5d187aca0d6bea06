"""Word-level language model, in the shape of PyTorch's examples/word_language_model (main.py,
model.py, data.py): embedding, 2-layer LSTM, decoder tied to the embedding, truncated BPTT with
`repackage_hidden`, gradient clipping and the manual update `p.data.add_(p.grad, alpha=-lr)`, lr
divided by 4 when the validation loss stops improving.

No data set can be downloaded here: the corpus is the docstrings of a fixed list of standard-library
modules (their classes and methods), one docstring line per sentence, so it is deterministic for a
given Python version (threading is left out: stabcheck run installs its own threading.excepthook).

    python benchmarks/programs/word_language_model.py [--steps 120] [--batch-size 20] [--bptt 35]

Prints the training and validation loss; the training loop's own wall time goes to stderr
(benchmarks/runtime_programs.py reads it).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import re
import sys
import time
import warnings

import torch
from torch import nn

MODULES = ("argparse", "collections", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
           "enum", "fractions", "functools", "heapq", "http.client", "inspect", "io", "ipaddress", "itertools",
           "json", "logging", "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "statistics", "string",
           "subprocess", "tarfile", "textwrap", "typing", "unittest", "urllib.parse", "zipfile")
WORD = re.compile(r"[a-z]+|[.,:()=]")


def docstrings(obj, depth=0):
    doc = inspect.getdoc(obj)
    if doc:
        yield doc
    if depth < 2:
        for name, member in sorted(vars(obj).items()):
            if name.startswith("_"):
                continue
            if inspect.isclass(member):
                yield from docstrings(member, depth + 1)
            elif callable(member) and getattr(member, "__doc__", None):
                yield inspect.getdoc(member) or ""


class Corpus:
    """Dictionary and token ids (data.py of the example, over docstring lines instead of files)."""

    def __init__(self):
        self.word2idx: dict[str, int] = {}
        sentences = []
        with warnings.catch_warnings():  # typing.io / typing.re warn when their docstring is read
            warnings.simplefilter("ignore", DeprecationWarning)
            for name in MODULES:
                for doc in docstrings(importlib.import_module(name)):
                    for line in doc.splitlines():
                        words = WORD.findall(line.lower())
                        if words:
                            sentences.append(words + ["<eos>"])
        ids = [self.add_word(w) for words in sentences for w in words]
        split = len(ids) * 9 // 10
        self.train = torch.tensor(ids[:split])
        self.valid = torch.tensor(ids[split:])

    def add_word(self, word):
        if word not in self.word2idx:
            self.word2idx[word] = len(self.word2idx)
        return self.word2idx[word]


class RNNModel(nn.Module):
    """Encoder, LSTM, decoder; the decoder's weight is the encoder's (tied)."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight
        self.nlayers, self.nhid = nlayers, nhid
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.decoder.out_features)
        return nn.functional.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


def repackage_hidden(h):
    """Detach the hidden state from its history (truncated BPTT)."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def evaluate(model, criterion, source, bptt, bsz):
    model.eval()
    total = 0.0
    hidden = model.init_hidden(bsz)
    with torch.no_grad():
        for i in range(0, source.size(0) - 1, bptt):
            data, targets = get_batch(source, i, bptt)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total += len(data) * criterion(output, targets).item()
    return total / (len(source) - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="training batches (BPTT windows)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--emsize", type=int, default=200)
    parser.add_argument("--lr", type=float, default=20.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--log-interval", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1111)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    corpus = Corpus()
    train_data = batchify(corpus.train, args.batch_size)
    val_data = batchify(corpus.valid, 10)
    ntokens = len(corpus.word2idx)
    model = RNNModel(ntokens, args.emsize, args.emsize, 2)
    criterion = nn.NLLLoss()
    print(f"{ntokens} words, {corpus.train.numel()} training tokens, "
          f"{sum(p.numel() for p in model.parameters())} parameters")

    lr, best_val = args.lr, None
    start = time.perf_counter()
    step, total_loss = 0, 0.0
    while step < args.steps:  # epochs over the training data
        model.train()
        hidden = model.init_hidden(args.batch_size)
        for i in range(0, train_data.size(0) - 1, args.bptt):
            data, targets = get_batch(train_data, i, args.bptt)
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
            step += 1
            if step % args.log_interval == 0:
                cur = total_loss / args.log_interval
                print(f"step {step:4d} lr {lr:5.2f} loss {cur:5.2f} ppl {math.exp(cur):8.2f}")
                total_loss = 0.0
            if step == args.steps:
                break
        val_loss = evaluate(model, criterion, val_data, args.bptt, 10)
        print(f"end of epoch at step {step}: valid loss {val_loss:5.2f} ppl {math.exp(val_loss):8.2f}")
        if not math.isfinite(val_loss):
            sys.exit("validation loss is not finite")
        if best_val is None or val_loss < best_val:
            best_val = val_loss
        else:
            lr /= 4.0
    print(f"train-loop-seconds {time.perf_counter() - start:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
