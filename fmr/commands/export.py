"""`fmr export`: a checkpoint to ONNX (checked under onnxruntime) or to fmr's safetensors."""

from __future__ import annotations

import argparse

HELP = "export a checkpoint to ONNX (checked under onnxruntime) or convert it to .safetensors"
DESCRIPTION = """\
Export an fmr checkpoint (.safetensors) or an insightface backbone.pth.

--onnx FILE writes one ONNX file with a dynamic batch dimension:
  input  'images'     float32 (batch, 3, 112, 112), RGB, normalised (x/255 - 0.5) / 0.5
                      (aligned 112x112 crops, ArcFace 5-point template)
  output 'embeddings' float32 (batch, E), NOT L2-normalised (normalise before cosines);
                      E is the card's embedding size (512 for fmr's models)
The model card is embedded in the ONNX metadata under "fmr_card". The export is then run under
onnxruntime next to PyTorch on random images at batch 1 and 3, and the largest difference is
printed; the command exits 1 if it exceeds 1e-4 (+ 1e-5 x |value|).

--safetensors BASE writes BASE.safetensors and BASE.json (fmr's checkpoint format) with the
weights stored as --storage; use it to bring an insightface backbone.pth into fmr or to shrink
a checkpoint (fp16 halves it, int8 quarters it).

examples:
  fmr export runs/r50/best.safetensors --onnx r50.onnx
  fmr export ~/ms1mv3_r50/backbone.pth --safetensors checkpoints/r50-ms1mv3 --storage fp16
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="fmr .safetensors checkpoint or insightface backbone.pth")
    parser.add_argument("--onnx", metavar="FILE", help="write an ONNX model here")
    parser.add_argument("--safetensors", metavar="BASE",
                        help="write BASE.safetensors + BASE.json (fmr's checkpoint format)")
    parser.add_argument("--storage", choices=("fp32", "fp16", "int8"), default="fp16",
                        help="weight storage for --safetensors (default fp16)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset version (default: the exporter's recommended one)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    if not args.onnx and not args.safetensors:
        import sys

        print("fmr export: error: give --onnx FILE and/or --safetensors BASE", file=sys.stderr)
        return 2
    from pathlib import Path

    from fmr.modelfile import load_model_file, save_model_file

    loaded = load_model_file(args.checkpoint)
    card = loaded.card
    print(f"loaded {loaded.path} ({card.architecture}, {card.embedding_size}-d embeddings)")
    status = 0
    if args.safetensors:
        written = save_model_file(args.safetensors, loaded.model, card, storage=args.storage)
        print(f"wrote {written} and {written.with_suffix('.json')} ({args.storage} weights)")
    if args.onnx:
        from fmr.export import export_onnx

        card.storage = "fp32"  # ONNX initialisers are fp32 whatever the checkpoint stored
        check = export_onnx(loaded.model, args.onnx, card, card.input_size, args.opset,
                            check=not args.no_check)
        size_mb = Path(args.onnx).stat().st_size / 1e6
        print(f"wrote {args.onnx} ({size_mb:.1f} MB, input 'images' (batch, 3, {card.input_size}, "
              f"{card.input_size}) RGB (x/255-0.5)/0.5, output 'embeddings')")
        if check is not None:
            print(check.summary())
            status = 0 if check.passed else 1
    return status
