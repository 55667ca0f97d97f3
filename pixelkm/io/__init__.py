"""Reading and writing data in pieces: image strips, .npy files, Pillow's limits, the host-to-device pipeline, and
the one progress helper. Below both the image toolkit and the streamed fits; never imports them."""
