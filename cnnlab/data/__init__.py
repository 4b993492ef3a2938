"""Images as uint8 arrays: named datasets and user folders, image files, preprocessing, batches."""
