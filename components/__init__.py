"""KFP components of the GeoGAN pipeline (`components.stages`), what they run in their pods (`components.runtime`,
`components.trainjob`) and the names they share with k8s/ (`components.settings`)."""
