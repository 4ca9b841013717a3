# The customer portal arrives with its own work; it has no models yet.
