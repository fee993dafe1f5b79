"""Will it fit: the memory plan (pure arithmetic) and the device it is measured on."""
