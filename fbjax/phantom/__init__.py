"""Floor 3: the ultrasound phantom (anatomy, B-mode simulation, exports, contact sheets)."""
