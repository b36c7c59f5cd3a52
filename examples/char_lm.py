"""A character-level language model: an LSTM trained with truncated BPTT, then sampled.

The text (the opening of Dickens' *A Tale of Two Cities*, 1859, public domain) is cut into
``--streams`` contiguous pieces that are read in parallel; ``fit(..., tbptt=k)`` walks them
``k`` characters at a time, carrying the LSTM's state from chunk to chunk. Sampling feeds the
model one character at a time with :func:`numbarnn.training.stateful_forward`. (The state
starts from zero at each stream's start, so the model only learns to run as far as one
stream is long: few, long streams let it sample long passages.)

    python examples/char_lm.py [--hidden 96] [--epochs 150] [--tbptt 25] [--temperature 0.6]
"""

import argparse

import numpy as np

from numbarnn import LSTM, Linear, Sequential
from numbarnn.optim import Adam
from numbarnn.training import fit, stateful_forward

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it "
    "was the season of Light, it was the season of Darkness, it was the spring of hope, it "
    "was the winter of despair, we had everything before us, we had nothing before us, we "
    "were all going direct to Heaven, we were all going direct the other way - in short, the "
    "period was so far like the present period, that some of its noisiest authorities "
    "insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only. "
)


def one_hot(indices, vocab_size):
    return np.eye(vocab_size, dtype=np.float32)[indices]


def sample(model, vocab, prompt, length, temperature, rng):
    """Continue ``prompt`` by ``length`` characters drawn from the model."""
    index = {c: i for i, c in enumerate(vocab)}
    model.eval()
    x = one_hot([index[c] for c in prompt], len(vocab))[:, None]  # (T, 1, vocab)
    logits, state = stateful_forward(model, x)
    out = []
    for _ in range(length):
        z = logits[-1, 0] / temperature
        p = np.exp(z - z.max())
        c = rng.choice(len(vocab), p=p / p.sum())
        out.append(vocab[c])
        logits, state = stateful_forward(model, one_hot([c], len(vocab))[:, None], state)
    model.train()
    return prompt + "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--tbptt", type=int, default=25, help="steps per chunk")
    parser.add_argument("--streams", type=int, default=2, help="pieces of text read in parallel")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--sample-length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    vocab = sorted(set(TEXT))
    ids = np.array([vocab.index(c) for c in TEXT])
    steps = (len(ids) - 1) // args.streams
    starts = np.arange(args.streams) * steps
    pos = starts[None, :] + np.arange(steps)[:, None]  # (T, streams)
    x = one_hot(ids[pos], len(vocab))  # (T, streams, vocab)
    y = ids[pos + 1]  # (T, streams): the next character

    model = Sequential(LSTM(len(vocab), args.hidden, seed=args.seed),
                       Linear(args.hidden, len(vocab), seed=args.seed + 1))
    history = fit(model, Adam(model, lr=args.lr), x, y, loss="cross_entropy",
                  epochs=args.epochs, batch_size=args.streams, shuffle=False,
                  tbptt=args.tbptt, clip_norm=5.0)
    rng = np.random.default_rng(args.seed)
    text = sample(model, vocab, "It was ", args.sample_length, args.temperature, rng)
    bits = history.loss[-1] / np.log(2)
    print(f"loss {history.loss[0]:.3f} -> {history.loss[-1]:.3f} nats/char ({bits:.2f} bits); "
          f"vocabulary {len(vocab)}, {len(TEXT)} characters")
    print(f"sample: {text!r}")
    return {"history": history, "sample": text, "vocab": vocab}


if __name__ == "__main__":
    main()
