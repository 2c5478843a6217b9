"""Train logistic regression on synthetic data and report the held-out accuracy to proctor."""

import json
import os
import time

import numpy as np

SEED = 7
SAMPLES = 2000
FEATURES = 20
TRAIN_FRACTION = 0.8
LEARNING_RATE = 0.5
EPOCHS = 300
LABEL_NOISE = 0.05
OUTPUT = "/data/perf.json"


def make_data(rng):
    x = rng.normal(size=(SAMPLES, FEATURES))
    weights = rng.normal(size=FEATURES)
    y = (x @ weights + 0.5 * rng.normal(size=SAMPLES) > 0).astype(float)
    flip = rng.random(SAMPLES) < LABEL_NOISE
    y[flip] = 1 - y[flip]
    return x, y


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def train(x, y):
    w = np.zeros(x.shape[1])
    b = 0.0
    for epoch in range(1, EPOCHS + 1):
        p = sigmoid(x @ w + b)
        w -= LEARNING_RATE * (x.T @ (p - y)) / len(y)
        b -= LEARNING_RATE * float(np.mean(p - y))
        if epoch % 50 == 0:
            print(f"epoch {epoch:4d}  train log-loss {log_loss(y, p):.4f}", flush=True)
    return w, b


def log_loss(y, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main():
    rng = np.random.default_rng(SEED)
    x, y = make_data(rng)
    split = int(SAMPLES * TRAIN_FRACTION)
    started = time.perf_counter()
    w, b = train(x[:split], y[:split])
    seconds = time.perf_counter() - started
    p = sigmoid(x[split:] @ w + b)
    accuracy = float(np.mean((p > 0.5) == y[split:]))
    loss = log_loss(y[split:], p)
    print(f"test accuracy {accuracy:.4f}  test log-loss {loss:.4f}", flush=True)
    result = {"perf": accuracy, "log_loss": loss, "train_seconds": seconds}
    with open(OUTPUT + ".tmp", "w") as handle:
        json.dump(result, handle)
    os.replace(OUTPUT + ".tmp", OUTPUT)


if __name__ == "__main__":
    main()
