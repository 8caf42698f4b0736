"""Physics only: materials, phase masks, propagation, PSFs, image formation and the sensor."""
