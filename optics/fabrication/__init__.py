"""From a designed optic to files a fab can write (GDSII, 16-bit TIFF, STL), and tolerance analysis."""
