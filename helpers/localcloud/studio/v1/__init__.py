"""Edge Impulse's Studio API (`/v1/api/...`) by area: projects, raw data, impulse, jobs, deployment."""
