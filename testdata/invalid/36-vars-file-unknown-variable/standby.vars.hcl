dr_root = "/srv/dr"
regoin  = "westeurope"
