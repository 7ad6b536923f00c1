"""The photoreal renderer: the reference picture animated by a motion file's landmarks.

warp.py moves the reference pixels along the face mesh (no learning); mouth_net.py paints the
inside of the mouth with a small network run by onnxruntime; renderer.py puts them together
and streams the video out with the speech. train.py (torch) trains the network on pairs of
frames of the same training clip; clip_frames.py reads a prepared clip's video frames.
"""
