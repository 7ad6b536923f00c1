"""The photoreal renderer: the reference picture animated by a motion file's landmarks.

warp.py moves the reference pixels along the face mesh (no learning); mouth_net.py paints the
inside of the mouth with a small network run by onnxruntime; renderer.py puts them together
and streams the video out with the speech (`dimitra render`). Training, with torch: pairs.py
makes self-reenactment pairs from `train` clips (clip_frames.py reads a prepared clip's video
frames), train.py trains and exports the network; acceptance.py measures the renderer on
`dev` and `unseen` (docs/MODEL_CARD.md, photoreal renderer).
"""
