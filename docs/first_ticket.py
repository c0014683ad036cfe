"""The first ticket of docs/getting-started.md: python docs/first_ticket.py"""
import torch, torchvision, tickets

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10)
init = tickets.snapshot(model)                      # the weights to rewind to
params = tickets.prunable_parameters(model)         # convs + linears; stem and classifier dense
for round in range(3):                              # (train the model here each round)
    tickets.global_magnitude_prune(params, amount=0.2)   # 20% of the surviving weights
    tickets.rewind(model, init)                     # survivors back to their initial values
ticket = tickets.Ticket.from_model(model, rewind_state=init)
print(ticket)
print(tickets.sparsity_report(model))
