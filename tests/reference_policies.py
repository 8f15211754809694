"""Plain, loop-based references for LocalLeap and AdaBlock (batch 1, temperature 0, no cache).

Written from the published descriptions and, for AdaBlock, the behaviour of the public
`generate_adablock` (window over the block-start forward's argmax, most confident delimiter with the
confidence exp(logit - logsumexp) in the logits' dtype and ties to the first, block ends at it inclusive,
first commit from the same forward, threshold commits with forced top-1).
"""

import torch
import torch.nn.functional as F


def _predict(model, x, mask_id=0):
    logits = model(x).logits[0]
    p = F.softmax(logits.double(), -1)
    scores = logits.double().clone()
    scores[:, mask_id] = float("-inf")  # the mask token is never a prediction (as in the engine)
    tok = scores.argmax(-1)
    return tok, p.gather(-1, tok[:, None])[:, 0]


def localleap_reference(model, prompt, gen_length, block_length, mask_id, kappa=0.9, tau=0.75, radius=4):
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], 1)
    P, nfe = prompt.shape[1], 0
    for b in range(gen_length // block_length):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        while (x[0, lo:hi] == mask_id).any():
            tok, conf = _predict(model, x)
            nfe += 1
            cand = [i for i in range(lo, hi) if x[0, i] == mask_id]
            anchors = [i for i in cand if conf[i] >= kappa]
            chosen = {max(cand, key=lambda i: (conf[i].item(), -i))}
            chosen |= set(anchors)
            for i in cand:
                if any(abs(i - a) <= radius for a in anchors) and conf[i] >= tau:
                    chosen.add(i)
            for i in chosen:
                x[0, i] = tok[i]
    return x[0, P:], nfe


def adablock_reference(model, prompt, gen_length, b0, mask_id, delimiters, tau_d, tau=0.9):
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], 1)
    P, done, nfe, blocks = prompt.shape[1], 0, 0, []
    while done < gen_length:
        tok, conf = _predict(model, x)
        logits = model(x).logits[0]
        nfe += 1
        start, remaining = P + done, gen_length - done
        window = range(start, start + min(int(0.25 * gen_length), remaining))
        delims = [i for i in window if tok[i].item() in delimiters]
        length = min(b0, remaining)
        if delims:
            dconf = {i: torch.exp(logits[i, tok[i]] - torch.logsumexp(logits[i], -1)).item() for i in delims}
            best = max(delims, key=lambda i: (dconf[i], -i))
            if dconf[best] >= tau_d:
                length = best - start + 1
        blocks.append(length)
        end = start + length
        done += length
        while True:
            cand = [i for i in range(start, end) if x[0, i] == mask_id]
            if not cand:
                break
            chosen = {max(cand, key=lambda i: (conf[i].item(), -i))} | {i for i in cand if conf[i] >= tau}
            for i in chosen:
                x[0, i] = tok[i]
            if not any(x[0, i] == mask_id for i in range(start, end)):
                break
            tok, conf = _predict(model, x)
            nfe += 1
    return x[0, P:], nfe, blocks
